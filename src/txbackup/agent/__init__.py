"""``txbackup agent``: one per Cassandra node, the engine's hands on that node.

The engine never logs in to a Cassandra host: it talks to the agent beside each
node (HTTP, JSON lines, a shared token, optional TLS; see ``server``), and the
agent runs ``nodetool`` against its own node, reads the snapshot folders and
writes to the backup storage itself. So **the agent needs the storage too**:
in production a storage every node and the engine reach (a shared file system
today; an object store when txbackup has one); in the tests a local folder
shared by all the nodes of the machine.

Calls (``POST /v1/<call>``):

- ``info`` / ``preflight``: the node (address, host id, cluster, datacenter,
  rack, tokens, version), which of the asked keyspaces are missing, and how
  snapshots are taken (``snapshots_via``: ``jmx`` or ``nodetool``); preflight
  also starts the JMX helper if it is not running, runs nodetool, writes a
  probe file to the storage and flushes the keyspaces (``flush_ms``), so that
  the snapshot's flush inside the pause has little left to write.
- ``snapshot {tag, keyspaces}``: one call on the agent's live JMX connection
  (``jmx``), else ``nodetool snapshot -t TAG KS...`` (flushes first; refuses an
  existing tag); answers ``via``. ``clear {tag, keyspaces}``: that tag only
  (JMX, else ``nodetool clearsnapshot -t TAG -- KS...``); older snapshots are
  never touched.
- ``upload {tag, keyspaces, store}``: every file of the snapshot into the
  content-addressed store (``blobs``), skipping those stored already, hashing
  only the files the hash cache (``hashcache``) does not know; answers the
  node's file list with SHA-256s, ``hashed_bytes`` and ``hash_cache_hits``.
  ``schema {keyspaces}``: ``DESCRIBE``.
- ``restore/check``, ``restore/prepare`` (fetch and verify into a staging
  folder), ``restore/schema`` (create what is missing of the set's schema, only
  its checked CREATE statements: see ``schema``; truncate with force),
  ``restore/import`` (``nodetool import``), ``restore/load`` (``sstableloader``
  through the agent's own node, never given the CQL password), ``restore/cleanup``.
- ``node/stop`` (drain, then the configured stop command),
  ``node/snapshot-offline`` (hard links, node stopped), ``node/start`` (the
  start command, then wait for CQL): the cold method.

A call takes only its own fields (``server.FIELDS``): the hosts the agent talks
to (CQL, sstableloader) come from its command line, never from a request. Calls
for one snapshot tag (snapshot, upload, clear) run one at a time.

With ``--state-dir``, the agent remembers the snapshots it took until they are
cleared; a restarted agent clears those left over (the backup that used them
failed when the agent went away, or had already committed).
"""
