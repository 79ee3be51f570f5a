"""Evaluation: cases, annotation variants, alternative methods, and the report comparing them.

Modules:
    cases: loads labelled CT cases from a folder or generates held-out phantoms.
    annotations: turns a 3D label into the one painted slice a user would draw (and its variants).
    baselines: the methods GastricPropagate is compared with (copy slice, region growing,
        registration, ideal fill-between-slices).
    evaluate: runs every method on every case and variant, writes results.csv, summary.md, figure.png.
"""
