"""The Batch API under /v1/batch: handlers, multipart uploads, jobs and the lines of a batch file."""
