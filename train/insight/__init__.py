"""Looking into data and models: a dataset's balance and duplicates, Grad-CAM, layer outputs and dead filters."""
