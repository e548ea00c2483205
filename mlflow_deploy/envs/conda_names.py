"""Conda package name -> PyPI name, for conda.yaml files without a pip: list entry for them.

Small on purpose: the packages MLflow models actually declare as conda packages. A name not here,
and not marked as conda-only, is an error naming it rather than a guess.
"""
from typing import Dict, FrozenSet

__all__ = ["CONDA_TO_PYPI", "CONDA_ONLY"]

CONDA_TO_PYPI: Dict[str, str] = {
    # the same name on both sides
    **{name: name for name in (
        "numpy", "scipy", "scikit-learn", "pandas", "mlflow", "mlflow-skinny", "cloudpickle",
        "lightgbm", "catboost", "statsmodels", "pyarrow", "matplotlib", "seaborn", "joblib",
        "psutil", "pyyaml", "requests", "flask", "gunicorn", "protobuf", "packaging",
        "sqlalchemy", "click", "jinja2", "numba", "sympy", "networkx", "pillow", "h5py",
        "keras", "tensorflow", "transformers", "tokenizers", "onnx", "onnxruntime", "prophet",
        "xlrd", "openpyxl", "shap", "skl2onnx", "tqdm", "typing-extensions", "dill",
        "pydantic", "setuptools", "wheel", "six", "python-dateutil", "pytz", "certifi",
        "sentencepiece", "torchvision", "torchaudio", "spacy", "nltk", "gensim", "fastai",
        "skops", "orjson", "threadpoolctl", "opencv-python", "polars", "mkl",
    )},
    # renamed
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "py-xgboost": "xgboost",
    "py-xgboost-cpu": "xgboost",
    "xgboost": "xgboost",
    "py-lightgbm": "lightgbm",
    "py-catboost": "catboost",
    "tensorflow-base": "tensorflow",
    "tensorflow-cpu": "tensorflow-cpu",
    "pytorch-lightning": "pytorch-lightning",
    "lightning": "lightning",
    "opencv": "opencv-python",
    "py-opencv": "opencv-python",
    "libopencv": "opencv-python",
    "scikit-image": "scikit-image",
    "pyyaml-base": "pyyaml",
    "msgpack-python": "msgpack",
    "typing_extensions": "typing-extensions",
    "arrow-cpp": "pyarrow",
    "pyarrow-core": "pyarrow",
    "matplotlib-base": "matplotlib",
    "huggingface_hub": "huggingface-hub",
    "py-spy": "py-spy",
}

#: Conda packages that are not Python packages (compilers, runtimes, the installer itself):
#: a venv already has them or does not need them, so they are dropped, not mapped.
CONDA_ONLY: FrozenSet[str] = frozenset({
    "python", "pip", "ca-certificates", "openssl", "libgcc-ng", "libstdcxx-ng", "libgomp",
    "_libgcc_mutex", "_openmp_mutex", "ld_impl_linux-64", "libffi", "ncurses", "readline",
    "sqlite", "tk", "xz", "zlib", "bzip2", "libzlib", "libuuid", "libnsl", "tzdata",
    "cudatoolkit", "cudnn", "mkl-service", "intel-openmp", "blas", "libblas", "libcblas",
    "liblapack", "openblas", "libopenblas", "nomkl", "vc", "vs2015_runtime", "ucrt",
})
