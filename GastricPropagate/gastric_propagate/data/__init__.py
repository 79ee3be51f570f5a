"""Reading and checking data: image I/O, cases (folders of pairs, phantoms), what a user paints, input validation."""
