"""Off-policy learning: TD3 and SAC with an asymmetric critic, a torch replay buffer and their runner."""
