"""The networks and the trained-model file that train writes and evaluate, export and inference read."""
