"""Datasets: synthetic DICOM generators and the loader for a labelled DICOM folder."""
