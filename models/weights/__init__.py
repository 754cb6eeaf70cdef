"""Weights as declared data: the manifest, the resolver that fetches or builds them into
weights/<name>, the downloader, the unpacker and the completeness check."""
