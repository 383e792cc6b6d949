"""What is measured and how: the run plan, the jobs the rules call (quality, speed, tuner), sharded KLD."""
