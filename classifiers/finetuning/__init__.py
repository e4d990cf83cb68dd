"""Fine-tuning end to end over audio: the model and its pooling heads, exports, LoRA, augmentations, and running a trained model on audio files."""
