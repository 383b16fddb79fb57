"""Data for peftlab: VTAB-1k (NOAH txt layout), FGVC (VPT json splits) and a generated demo."""

from peftlab.data.demo import make_demo_dataset
from peftlab.data.errors import DataError, Problem
from peftlab.data.fgvc import FGVCDataModule
from peftlab.data.vtab import VTABDataModule

__all__ = ["DataError", "FGVCDataModule", "Problem", "VTABDataModule", "make_demo_dataset"]
