"""scikit-learn's 8x8 digits as the image example of batch scoring: build.py trains and saves the
model and renders PNGs; batch_driver.py is the batch deployment's scoring script."""
