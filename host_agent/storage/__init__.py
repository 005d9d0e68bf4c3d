"""The host agent's storage library: image cache, volume clones, disk wipes.

Three modules, one concern each, sharing the extent walker in ``extents``
and the exception tree in ``errors`` (drawn there):

* ``images.ImageCache`` downloads boot images (``file://``, plain paths,
  ``http(s)://``) into a local directory, verifies their sha256 while
  streaming, checks that they look like a bootable disk, and keeps holes.
  It is the only async API: ``fetch`` and ``evict`` are coroutines that run
  their blocking work in ``asyncio.to_thread`` themselves.
* ``clone.clone_volume`` / ``create_volume`` / ``grow_volume`` make an
  instance's root volume from a cached image (reflink, else in-kernel copy
  of data extents, else a sparse read/write copy).
* ``wipe.wipe_disk`` destroys a local instance-store disk (a file or a block
  device) and reads it back to prove it.

Everything in ``clone`` and ``wipe`` blocks (it does file I/O and may run
for seconds): call it from asyncio code with
``await asyncio.to_thread(clone_volume, src, dst, size_bytes=n)``.
Messages of every ``StorageError`` are one line and bounded in length,
because the agent reports them to tenants as an instance's failure reason.
"""
