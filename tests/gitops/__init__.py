"""Helpers of the GitOps tests: render Argo CD Applications the way Argo CD does."""
