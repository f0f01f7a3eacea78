"""Installs stem_tfrs (the library) and data_prep (the data set preparers)."""

from setuptools import find_packages, setup

setup(
    name="stem_tfrs",
    version="0.1.0",
    description="STEM-Net (shared and task-specific embeddings, AAAI 2024) on "
                "TensorFlow Recommenders",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["stem_tfrs", "stem_tfrs.*", "data_prep", "data_prep.*"]),
    python_requires=">=3.11",
    # Pinned together: TFRS 0.7.7 needs Keras 2 (tf-keras), whose version must
    # match TensorFlow's. Depend on `tensorflow` itself: TFRS requires that
    # name, so `tensorflow-cpu` would install a second copy.
    install_requires=[
        "tensorflow==2.21.0",
        "tf-keras==2.21.0",
        "tensorflow-recommenders==0.7.7",
        "tensorboard==2.21.0",
        "pandas==3.1.1",
        # data_prep's reader, writer and record encoding (tested: 26.0.1, and 25.0.1, which
        # apache-beam 2.77 requires: the beam extra)
        "pyarrow>=25.0.1,<27",
        "absl-py==2.5.1",
        "matplotlib==3.11.2",
        "tensorflow-serving-api==2.21.0",
        "keras-tuner==1.4.8",  # python main.py tune
    ],
    # The tests also execute the quickstart notebook in a Jupyter kernel, run in two
    # processes (pytest-xdist: alone they kept ~1.1 of 2 cores busy), and run the Beam
    # pipeline on the DirectRunner (so the test extra includes the beam one).
    extras_require={"test": ["pytest>=8,<10", "pytest-xdist==3.8.0", "nbclient==0.11.0",
                             "nbformat==5.11.1", "ipykernel==7.4.0", "apache-beam>=2.77,<3"],
                    "beam": ["apache-beam>=2.77,<3"]},  # --runner (docs/beam.md)
)
