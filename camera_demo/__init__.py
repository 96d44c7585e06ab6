"""Live demo of the signkit runtime on a camera, a video or a folder of images (Raspberry Pi or laptop)."""
