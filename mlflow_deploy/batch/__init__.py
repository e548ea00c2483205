"""Batch endpoints: deployments that score folders of files in jobs."""
