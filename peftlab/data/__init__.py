"""Data for peftlab: VTAB-1k (NOAH txt layout), FGVC (VPT json splits) and a generated demo.

Configs: ``data=demo`` (generated at ``${paths.data_dir}/demo``), ``data=vtab1k/<task>`` (19 tasks, root
``${paths.data_dir}/vtab-1k``), ``data=fgvc/{cub,nabirds,flowers,dogs,cars}`` (root
``${paths.data_dir}/fgvc``); your own task: ``data=vtab_layout`` (NOAH txt splits) or ``data=image_folder``
(``train/val/test/<class>/``).
``data.split=search`` trains on train800 (FGVC: train.json) and evaluates val200 (val.json); ``data.split=final``
trains on train800val200 (train+val) and evaluates test. Check a dataset before training with
``python -m peftlab.data.check data=vtab1k paths.data_dir=/datasets``.

Every problem with the files on disk raises :class:`DataError`, which names the file (and line) and the fix.
"""

from peftlab.data.demo import make_demo_dataset
from peftlab.data.errors import DataError, Problem
from peftlab.data.fgvc import FGVCDataModule
from peftlab.data.folder import ImageFolderDataModule
from peftlab.data.vtab import VTABDataModule

__all__ = ["DataError", "FGVCDataModule", "ImageFolderDataModule", "Problem", "VTABDataModule", "make_demo_dataset"]
