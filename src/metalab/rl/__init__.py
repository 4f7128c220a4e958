"""Meta-reinforcement learning: task distributions over environments (envs), a Gaussian policy
evaluated with per-task parameters (policy), batched rollouts and policy-gradient losses (pg)."""
