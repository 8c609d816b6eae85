"""predict and serve: reading people's digit images and answering with the exported model."""
