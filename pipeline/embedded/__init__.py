"""The serverless default: the filesystem broker and the in-process worker."""
