"""Pure-torch models: the ViT and text towers, state and feedback modules, the CLIP/LLaVA 2 x 2, pretrained loading."""
