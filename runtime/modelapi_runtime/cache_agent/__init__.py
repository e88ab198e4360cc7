"""The node cache agent (``modelapi-cache``): one per node (a DaemonSet of the chart), shared by every model pod there.

A model pod asks its node's agent for its artifact with two presigned URLs it made with its own credentials (a HEAD
and a GET of the object). The agent runs the HEAD against the store itself before anything else: only a 200 whose
ETag and size match a cached entry lets the pod read that entry; otherwise (a miss) it downloads through the GET URL
into the cache while the pod reads along. A pod whose credentials cannot read the object learns nothing about the
cache. Layout of the cache directory::

    objects/<sha256(object URL)>        a verified artifact
    objects/<sha256(object URL)>.json   its object URL, ETag, size and SHA-256
    tmp/                                fills in progress (emptied at start)

Modules: ``main`` (the console script) -> ``server`` (HTTP) -> ``cache`` (files, fills, leases) -> ``presigned``
(allowed endpoints, the store requests) and ``index`` (LRU and leases, pure) -> ``protocol`` / ``settings``.
"""
