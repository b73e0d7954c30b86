"""Training: the networks, the training loop and its steps, augmentation, the device, DDP and resuming."""
