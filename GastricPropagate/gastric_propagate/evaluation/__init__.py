"""Evaluation: annotation variants, alternative methods, and the report comparing them.

Cases come from ``gastric_propagate.data.cases`` (a folder of pairs) or ``gastric_propagate.synthetic.generators``
(held-out synthetic cases).

Modules:
    annotations: turns a 3D label into the one painted slice a user would draw (and its variants).
    baselines: the methods GastricPropagate is compared with (copy slice, region growing,
        registration, ideal fill-between-slices).
    running: runs every method on every case and variant and scores it, in memory.
    reporting: writes the report: results.csv, summary.md, figure.png (and the example and confidence files).
    evaluate: the evaluate command (loads the cases, runs, writes the report); both modules' names import from it.
"""
