"""Images in: finding and reading image files, query links, edited copies, the original project's data.

- :mod:`~revsearch.media.images`: find, read (EXIF rotation, CMYK, bombs) and prepare images; file hashes.
- :mod:`~revsearch.media.reader`: read image files in threads, ahead of the model, in order.
- :mod:`~revsearch.media.remote`: download a query image given by URL, with a time limit and a size cap.
- :mod:`~revsearch.media.edits`: the image-edit library (crops, re-encodes, ...) as people re-share photos.
- :mod:`~revsearch.media.data`: download and unpack the data the original project published.

Importing this package imports none of its modules.
"""
