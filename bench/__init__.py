"""Benchmarks: each one times s2r and its peer (or the physical ceiling) in one process run and reports ratios.

The machine is shared and noisy, so absolute times are notes; the ratios are the result. Every benchmark
prints a table, prints its JSON as the last stdout line and writes it to `bench/results/<name>.json`.

    PYTHONPATH=. python -m bench.sim --task cartpole --num-envs 1024
    PYTHONPATH=. python -m bench.inference
    PYTHONPATH=. python -m bench.train --task cartpole
"""
