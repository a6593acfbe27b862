import torch

# One thread: this suite's tensors are tiny, and on a shared CPU more threads only add contention.
torch.set_num_threads(1)
