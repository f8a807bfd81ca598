"""Live collections: keep a collection in step with folders that change (``serve --watch``), and reach the server
that owns a store from other commands.

- ``sync``: ``FolderSync``, a stat-only re-run of the ingest driver restricted to changed paths, carrying vectors
  over by content hash (renames and moves run no model);
- ``watch``: ``FolderWatcher``, file-system events (``watchfiles``) reduced to debounced changed paths;
- ``follow``: ``LiveFolders``, catch-up at start, then one sync per batch of changes, on a thread of its own;
- ``config``: ``LiveConfig``, the ``serve`` options ``--watch`` and ``--ingest-root``;
- ``remote``: ``RunningOwner``, the HTTP client the CLI uses when a server holds the store folder.

Submodules are imported where used (the CLI imports ``config`` and ``remote`` without the ingest machinery).
"""
