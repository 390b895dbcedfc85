"""The engine: typed configuration and presets, run assembly, the training loop, checkpoints,
distributed training, evaluation, comparison and judges. It may use every layer below it;
only the command line imports it. Import the module you need (nothing is loaded here)."""
