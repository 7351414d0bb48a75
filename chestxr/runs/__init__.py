"""Layer 5: the run folder and the workflows on it (load a run, predict, calibrate, evaluate, export). Imports every floor below."""
