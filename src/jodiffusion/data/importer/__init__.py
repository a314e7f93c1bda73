"""Turn a segmentation folder as it was downloaded into this project's folder layout (``jodiffusion import``).

What a source folder may look like (every case is read, none needs converting by hand):

* images and masks in any two folders or globs the user names (``--images 'photos/*.jpg' --masks gt``);
  else the first of ``images/``, ``imgs/``, ``JPEGImages/``, ... and of ``masks/``, ``labels/``,
  ``annotations/``, ``SegmentationClass/``, ... found in SRC; else found by content (``discovery.py``:
  the single-channel or palette files with few values are the masks, the pictures sharing their names
  the images; Cityscapes' name tags, SegNet's ``trainannot/`` and ``_mask`` suffixes included; case and
  tile folders, ``P1/a_1.tif`` + ``P1/a_1_mask.tif`` or ``Tile 1/images/`` + ``Tile 1/masks/``, as one
  family). An image pairs only with a mask whose path is the same once the image / mask folder part and
  the name tags are taken off (``pairing.py``); never across case or tile folders. PNG, JPEG, BMP or TIFF
  on either side. A first sub-folder named after a split
  (``train``/``training``, ``val``/``valid``/``validation``, ``test``/``testing``) gives the split;
* masks as class ids (single-channel or palette PNGs), as binary figure-ground masks (0/255, 0/1, or
  lossy JPEG, thresholded), or as colour-coded RGB (mapped through a palette: the classes file's, or the
  distinct colours found, exactly in lossless masks; any other colour is snapped to the nearest palette
  colour and counted; a table that snaps over 3% of the pixels or empties a class is refused,
  ``colour_fit.py``). Palette PNGs are read by colour when the class file gives colours, when their
  palettes disagree or when RGB masks are among them. Class files are read as datasets ship them
  (``class_files.py``). An optional value map rewrites raw values first (``255=1,0=ignore``;
  ``#e0e0c0=ignore`` for colours);
* masks at another size than their image: the image is resized to the mask (default, the mask is the
  truth; bicubic) or the mask to the image (nearest). Pairs whose aspect ratios differ by more than
  ``aspect_tolerance`` are left out, listed by file.

Unreadable, empty (0 bytes) and constant (e.g. all black) images, unreadable masks, and images or masks
without a partner are left out and listed with the reason, never silently kept or dropped. Mask values
outside the label space stop the import (nothing is written) with the files and values listed, since
only the user knows what they mean (``--value-map``).

Without splits in the source, ``val_fraction`` of the pairs (seeded shuffle) become ``val``; a source
with a train split but no val split has its val carved out of train the same way.

Output (``layout``)::

    OUT/
      .jodiffusion-owner.json   {"command": "import"}: what ``--overwrite`` may replace
      classes.json              from --names or --classes (binary masks: background, foreground)
      images/<split>/<stem>.png|.jpg   copied byte for byte when every image is a PNG, or every one a
                                JPEG, and none is resized; else all written as PNG (one suffix for all, as
                                MMSegmentation's img_suffix wants)
      masks/<split>/<stem>.png  palette PNG of class ids, 255 = ignore
      splits/<split>.txt        the stems of each split
      import.json               the summary: settings, pairs per split, resized, snapped pixels,
                                left out (file, kind, reason), and the validation result

Everything is written into a temporary folder beside OUT and renamed onto OUT only after the result
passed ``validate_dataset``, so a failure leaves no half-written OUT (a kill leaves at most that hidden
``.jodiffusion-<token>.OUT.tmp`` folder beside it, which the next import into OUT removes). SRC is only read.

The package, in the order an import runs: ``class_files`` and ``plan.check_arguments`` (the class file
and the flags, before any mask is read), ``discovery`` (which files are the images and which the masks;
``source_files``: the files a folder or glob names; ``families`` and ``file_kind``: the families of files
and what they hold; ``names``: what file and folder names say), ``pairing`` (which image goes with which
mask, and the output names), ``mask_scan`` (one look at every mask), ``value_map`` (the classes and the
value map the user gave), ``plan`` (how each mask type becomes class ids; ``colour_fit`` checks a colour
table), ``write`` (one pair into the output folder), ``hints`` (what to do about empty classes and values
outside the ids) and ``folder`` (``import_folder``: all of it, the splits, validation and the swap into
place). ``options`` holds what the command is told and what it reports.
"""
