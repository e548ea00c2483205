"""Batch endpoints, deployments and jobs: Azure ML's batch scoring, run on this machine."""
