"""archc's benchmarks: measured comparisons with torchvision, as ratios (not timed tests).

Run everything and write benchmarks/RESULTS.md:

    .venv/bin/python -m benchmarks            # full run (~15 min on 2 cores)
    .venv/bin/python -m benchmarks --quick    # smoke run: few rounds, small inputs
    .venv/bin/python -m benchmarks --only fuse,eval --specs resnet50

GPU training throughput is a separate script: `python benchmarks/gpu_train.py` on a CUDA machine.
"""
