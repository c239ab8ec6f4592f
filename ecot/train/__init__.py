"""Training: step -> tokens/labels, collate, trainer (single process, DDP/FSDP2 via torchrun, LoRA), recipes."""
