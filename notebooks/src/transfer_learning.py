# %% [markdown]
# # Buses vs cars: transfer learning in a Spark ML Pipeline (chapter 12)
#
# The second half of chapter 12 reads 49 bus and 41 car photos with `ImageSchema.readImages`, splits each class
# 60/40, and fits `Pipeline([DeepImageFeaturizer(modelName="InceptionV3"), LogisticRegression(maxIter=30)])`
# with Databricks' sparkdl: 100% accuracy on 36 test images. sparkdl and ImageSchema are gone. The
# `transfer_learning` job (`jobs/transfer_learning.py`) builds the same Pipeline from Spark's `binaryFile` source
# and `tfos_lib.ml.DeepImageFeaturizer` (a `tf.keras.applications` backbone run in the executors through
# `predict_batch_udf`), then MLlib's `LogisticRegression` (the book's), or with `classifier = "keras"` a softmax
# layer trained data-parallel by `tfos_lib` workers inside the Pipeline (`tfos_lib.ml.KerasEstimator`).
#
# **Weights**: nothing may be downloaded, so `weights` is a local no-top weights file of `backbone` (e.g. Keras'
# `inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5`); `"none"` initialises the backbone at random and
# the results say so. **Data**: one folder per class (`buses/`, `cars/`) from `data_dir` (the book's is
# `../shared/data/book/ch12`); empty: synthetic JPEG buses and cars drawn in that layout.
# %% [parameters]
data_dir = ""  # one folder of images per class (buses/, cars/); empty: synthetic buses and cars
backbone = "InceptionV3"  # Keras application without its top (the book's: InceptionV3)
weights = "none"  # local no-top weights file of the backbone; none: random initialisation (reported)
image_size = 0  # input height/width; 0: the backbone's own (InceptionV3: 299)
alpha = 1.0  # MobileNetV2 width multiplier
classifier = "logreg"  # logreg: the book's MLlib LogisticRegression; keras: a softmax layer trained by tfos_lib
epochs = 50  # epochs of the keras classifier
batch_size = 16  # images per backbone call; for the keras classifier also its global batch
num_workers = 2  # TensorFlow workers of the keras classifier, one Spark task each
default_images = 30  # synthetic images per class without data_dir
output_dir = "output/notebooks/transfer_learning"  # metrics.json, the PipelineModel and the plots
mlflow = False  # log the run to MLflow (MLFLOW_TRACKING_URI)
# %% [ci]
backbone, alpha, image_size, default_images = "MobileNetV2", 0.35, 96, 12
classifier, epochs, batch_size, num_workers = "keras", 20, 8, 1
# %% [markdown]
# ## The data in Spark
# `load_images` reads every file as a binary row labelled by its folder; the executors try to decode each one,
# and files that are not images are skipped and listed (never silently). Then the book's split: each class 60/40
# on its own, with the book's seeds.
# %%
from pyspark.sql import functions as F

from jobs import transfer_learning
from tfos_lib import job, notebook, report
from tfos_lib.datasets import image_folders

args = notebook.argv(data_dir=data_dir, backbone=backbone, weights=weights, image_size=image_size, alpha=alpha,
                     classifier=classifier, epochs=epochs, batch_size=batch_size, num_workers=num_workers,
                     default_images=default_images, output_dir=output_dir, mlflow=mlflow, overwrite=True)
cfg = job.parse_config(transfer_learning.Config, args)  # the job's own options and checks
images, classes, skipped, source = transfer_learning.load_images(spark, cfg)
train_df, test_df = transfer_learning.split(images, classes, cfg)
print(f"{source}: classes {classes}, {len(skipped)} file(s) skipped {skipped[:3]}")
train_df.withColumn("part", F.lit("train")).unionByName(test_df.withColumn("part", F.lit("test"))) \
    .groupBy("part", "label").count().orderBy("part", "label").toPandas()
# %%
rows = images.orderBy("label", "path").collect()
rows = rows[:8] + rows[-8:]
grid = report.plot_image_grid(f"{ROOT}/build/notebooks/transfer_learning_samples.png",
                              image_folders.thumbnails([r.content for r in rows]), [classes[r.label] for r in rows])
notebook.show_plots(str(grid.parent), [grid.name]);
# %% [markdown]
# ## The Pipeline: features in the executors, then the classifier
# `transfer_learning.main` is the job itself: it fits the Pipeline on the training images (the featurizer loads
# the backbone once per Python worker and runs it on Arrow batches; with `classifier = "keras"` the
# `KerasEstimator` stage trains on `num_workers` Spark tasks through `tfos_lib`, logging each epoch), scores
# the test images with the fitted `PipelineModel` and saves it.
# %%
metrics = transfer_learning.main(args)
# %% [markdown]
# ## Results beside the book's
# With random weights (`weights = "none"`) the features are far weaker than ImageNet's, so the accuracy is not
# comparable with the book's 100%; `weights_note` says which case this run is.
# %%
notebook.book_vs_ours(metrics, {"test accuracy": "test_accuracy", "test images": "test_images",
                                "correct": "correct", "classifier": "classifier", "weights": "weights_note",
                                "Pipeline fit seconds": "fit_seconds"})
# %%
notebook.show_plots(cfg.output_dir, ["confusion_matrix.png", "test_predictions.png"]);
