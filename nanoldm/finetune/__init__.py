"""Finetuning a trained model: textual-inversion embeddings and hypernetworks, in the file formats A1111 and
diffusers use."""
