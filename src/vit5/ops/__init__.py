"""Pure tensor functions (torch only): initialisers, RoPE tables and rotations, FFT long convolutions."""
