import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(workflow.basedir)))  # the insight package of this checkout

from insight.core.layout import RUN, RunLayout
from insight.core.provenance import script_digest
from insight.core.settings import (
    MODEL_BUNDLE_KEYS,
    ConfigError,
    published_head_missing,
    result_settings,
    settings_from_config,
    validate_config,
)
from insight.core.variants import (
    DEFAULT_NAME,
    DINOISER_TRAINING_KEYS,
    WILDCARD_PATTERN,
    check_variants,
    name_of,
    stage_layout,
    variant_config,
    wildcard_of,
)

try:
    validate_config(config)  # in place: the jobs' config has the schema's defaults
    settings_from_config(
        config
    )  # the typed settings every job builds, checked once here
    check_variants(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None


wildcard_constraints:
    variant=WILDCARD_PATTERN,


OUT = RunLayout("results{variant}")
"""The output patterns of the rules a variant reruns: ``{variant}`` is empty for the
default run (``results/``) and ``/variants/NAME`` for a variant."""
VARIANT_CONFIGS = {
    None: config,
    **{name: variant_config(config, name) for name in config["variants"]},
}


def config_of(wildcards):
    """The config of a job's variant (the run's config for the default run)."""
    return VARIANT_CONFIGS[name_of(getattr(wildcards, "variant", ""))]


def upstream(stage, wildcards):
    """The layout holding ``stage``'s outputs for a job's variant: its own folder when
    the variant changes that stage, else the default run's."""
    return stage_layout(config, getattr(wildcards, "variant", ""), stage)


def settings_of(*keys):
    """The settings under the dotted ``keys`` less those the schema marks as changing no
    output, in the job's variant: a rule's ``settings`` param, so only a change of result
    reruns it."""
    return lambda wildcards: result_settings(config_of(wildcards), *keys)


def model_settings(*keys):
    """:func:`settings_of` the model bundle every model job loads (backbone, gamma,
    precision) and ``keys``."""
    return settings_of(*MODEL_BUNDLE_KEYS, *keys)


def for_dataset(settings, section, name):
    """``settings`` with ``section.datasets`` cut to ``name`` (and its ``custom`` entry),
    so adding a benchmark or dataset does not rerun the others."""
    view = dict(settings[section])
    view["datasets"] = {name: view["datasets"][name]}
    if "custom" in view:
        view["custom"] = {k: v for k, v in view["custom"].items() if k == name}
    return {**settings, section: view}


DEMO_IMAGES = "results/demo/images"
DEMO_VOC = "results/demo/voc/VOC2012"
DEMO_PARTS = "results/demo/parts"
DEMO_IMAGEFOLDER = "results/demo/imagefolder"
DEMO_CAPTIONS = "results/demo/captions"
DEMO_CLIP_PAIRS = "results/demo/clip_pairs"
ENV = "../../envs/insight.yaml"
SOURCE_LAYOUTS = {
    "folder": "a folder of image files (recursive)",
    "list": "a .txt list of image paths, or a .csv with a 'path' column",
    "tar": "a folder of webdataset .tar shards (img2dataset layout) or one .tar file",
}


SCRIPTS = Path(workflow.basedir) / "workflow/scripts"


def script_version(script):
    """Hash of the insight code the rule's script imports (transitively): a param, so
    editing the library reruns exactly the rules whose scripts reach the edited code."""
    return script_digest(SCRIPTS / f"{script}.py")


def backbone_weights(wildcards=None):
    """The backbone's local checkpoint as an input of every model job: the file rule
    train_clip writes (clip_training.pairs set) or an existing one (a missing file is
    left to the job, whose error names what to download)."""
    path = config["backbone"]["checkpoint"]
    if path and (config["clip_training"]["pairs"] or Path(path).exists()):
        return [path]
    return []


def clip_pairs(wildcards=None):
    """The pairs CSV of clip_training (the demo's generated folder, or a file that must exist)."""
    pairs = config["clip_training"]["pairs"]
    if not config["backbone"]["checkpoint"]:
        raise WorkflowError(
            "clip_training.pairs is set: set backbone.checkpoint to the file it should write"
        )
    if demo_world():
        return [DEMO_CLIP_PAIRS]
    if not Path(pairs).is_file():
        raise WorkflowError(
            f"clip_training.pairs: {pairs} does not exist (a CSV with columns path and caption)"
        )
    return [pairs]


def check_ovs_benchmarks():
    """Every benchmark under ovs.datasets resolves (built in, or a valid ovs.custom entry)."""
    from insight.data.benchmarks import benchmark

    for name in config["ovs"]["datasets"]:
        try:
            benchmark(name, config["ovs"]["custom"])
        except (KeyError, ValueError) as err:
            message = err.args[0] if err.args else err
            raise WorkflowError(f"ovs.datasets.{name}: {message}") from None


check_ovs_benchmarks()


def dataset_config(name):
    try:
        return config["datasets"][name]
    except KeyError:
        raise WorkflowError(
            f"dataset {name!r} is used but not defined under `datasets:` in the config"
        )


def dataset_source(wildcards):
    """The image source of a dataset; a missing one fails naming the expected layout."""
    return checked_source(wildcards.dataset)


def checked_source(name):
    ds = dataset_config(name)
    if "source" not in ds:
        raise WorkflowError(
            f"dataset {name!r} has only `features:`; stages that need its images cannot run"
        )
    source = ds["source"]
    if source != DEMO_IMAGES and not Path(source).exists():
        raise WorkflowError(
            f"dataset {name!r}: source {source} does not exist. "
            f"Expected for kind {ds['kind']!r}: {SOURCE_LAYOUTS[ds['kind']]}"
        )
    return source


def dinoiser_dataset():
    return config["dinoiser"]["dataset"] or config["train_dataset"]


def shard_count(dataset):
    """Number of feature shards of an image dataset, known once its index exists."""
    index = checkpoints.index_images.get(dataset=dataset).output.summary
    return json.loads(Path(index).read_text())["shards"]


def feature_shards(dataset, layout=RUN):
    """Feature shard paths of a dataset: extracted here (under ``layout``), or given by
    `features:`."""
    ds = dataset_config(dataset)
    if "features" in ds:
        shards = sorted(Path(ds["features"]).glob("shard-*.parquet"))
        if not shards:
            raise WorkflowError(
                f"dataset {dataset!r}: no shard-*.parquet in features folder {ds['features']}"
            )
        return [str(p) for p in shards]
    return expand(
        "{root}/features/{dataset}/shard-{shard:05d}.parquet",
        root=layout.root,
        dataset=dataset,
        shard=range(shard_count(dataset)),
    )


def shard_ids(dataset):
    """The five-digit shard ids of a dataset's feature shards."""
    return [
        re.search(r"shard-(\d{5})\.parquet$", p).group(1)
        for p in feature_shards(dataset)
    ]


def feature_shard(dataset, shard, layout=RUN):
    ds = dataset_config(dataset)
    folder = ds["features"] if "features" in ds else f"{layout.root}/features/{dataset}"
    return f"{folder}/shard-{shard}.parquet"


def concept_shards(dataset, layout=RUN):
    return expand(
        "{root}/concepts/{dataset}/shard-{shard}.parquet",
        root=layout.root,
        dataset=dataset,
        shard=shard_ids(dataset),
    )


def hierarchy_dataset():
    return config["hierarchy"]["dataset"] or config["train_dataset"]


def partial_groups(wildcards):
    """The concept shards of the hierarchy dataset, cut into the partial jobs' groups."""
    shards = concept_shards(hierarchy_dataset(), upstream("concepts", wildcards))
    size = config_of(wildcards)["hierarchy"]["shards_per_partial"]
    return [shards[i : i + size] for i in range(0, len(shards), size)]


def browser_dataset():
    return config["browser"]["dataset"] or hierarchy_dataset()


def browser_image_index(wildcards=None):
    """The browser dataset's image index, when it has images (for the thumbnails)."""
    name = browser_dataset()
    if "source" not in dataset_config(name):
        return []
    return [f"results/images/{name}/index.parquet"]


def user_embeddings(wildcards=None):
    """A precomputed (term, embedding) table, when `vocabulary.embeddings` names one."""
    path = config["vocabulary"]["embeddings"]
    return [path] if path else []


def template_file(wildcards=None):
    """The user's naming-template file, when `vocabulary.templates` names one."""
    setting = config["vocabulary"]["templates"]
    return [] if setting in ("release", "project") else [setting]


def ovs_root_input(wildcards):
    """A benchmark's root as an input when it exists (or the workflow makes it), so a
    dataset added later makes its result stale; an absent one is reported as not run."""
    root = config["ovs"]["datasets"][wildcards.benchmark]
    return [root] if root == DEMO_VOC or Path(root).exists() else []


def interpretability_roots(wildcards=None):
    """The part-annotated roots that exist (or that the workflow makes) as inputs."""
    roots = config["interpretability"]["datasets"].values()
    return [r for r in roots if r == DEMO_PARTS or Path(r).exists()]


def classification_root(wildcards):
    """An ImageFolder root as an input when it exists (or the workflow makes it)."""
    root = config["classification"]["datasets"][wildcards.cdataset]
    return [root] if root == DEMO_IMAGEFOLDER or Path(root).exists() else []


def captioner_settings(*keys):
    """:func:`settings_of` the captioning section (and ``keys``) less the steering study,
    which only caption_steering reads: a new steering target reruns the study, not the
    captioners."""
    settings = result_settings(config, "captioning", *keys)
    settings["captioning"] = {
        k: v for k, v in settings["captioning"].items() if k != "steering"
    }
    return settings


def captioning_data(wildcards=None):
    """The Karpathy split file and the images (the demo's folder, which the workflow
    makes, or a COCO root that must exist); a missing one says what to download."""
    cfg = config["captioning"]
    paths = [cfg["split_file"], cfg["images_root"]]
    if None in paths:
        raise WorkflowError(
            "captioning needs captioning.split_file (Karpathy's dataset_coco.json) and "
            "captioning.images_root (the COCO folder with train2014/ and val2014/)"
        )
    if all(Path(p).is_relative_to(DEMO_CAPTIONS) for p in paths):
        return [DEMO_CAPTIONS]
    for path in paths:
        if not Path(path).exists():
            raise WorkflowError(
                f"captioning: {path} does not exist. Download the Karpathy splits "
                "(dataset_coco.json) and COCO 2014 train/val images."
            )
    return paths


def rejected_tables(dataset, layout=RUN):
    """The per-shard rejected-image tables of an extracted dataset."""
    return expand(
        "{root}/features/{dataset}/rejected/shard-{shard:05d}.parquet",
        root=layout.root,
        dataset=dataset,
        shard=range(shard_count(dataset)),
    )


def imported_names(wildcards=None):
    """The names file shipped with the imported SAE, when naming.method is imported."""
    if config["naming"]["method"] != "imported":
        return []
    return [str(Path(config["sae"]["checkpoint"]) / "concept_names.txt")]


def dinoiser_weights(wildcards=None):
    """The DINOiser head a model job reads: the released checkpoint when one is configured
    (then train_dinoiser does not run), else the head train_dinoiser writes; none when the
    DINOiser is disabled."""
    dinoiser = config_of(wildcards)["dinoiser"]
    if not dinoiser["enabled"]:
        return []
    if dinoiser["checkpoint"]:
        if not Path(dinoiser["checkpoint"]).is_file():
            raise WorkflowError(published_head_missing(dinoiser["checkpoint"]))
        return [dinoiser["checkpoint"]]
    return [upstream("dinoiser", wildcards).dinoiser_weights]


def all_targets():
    targets = []
    for name in config["encode_datasets"]:
        if "source" in dataset_config(name):
            targets.append(f"results/features/{name}/summary.json")
        targets.append(f"results/concepts/{name}/summary.json")
    targets.append(RUN.families)
    targets.append(RUN.names)
    if config["ovs"]["datasets"]:
        targets.append("results/ovs_table.csv")
    if config["interpretability"]["datasets"]:
        targets.append("results/interpretability_table.csv")
    if config["classification"]["datasets"]:
        targets.append("results/classification_table.csv")
    if config["captioning"]["split_file"]:
        targets.append("results/captioning_table.csv")
        if config["captioning"]["steering"]["targets"]:
            targets.append("results/captioning/steering.json")
    if config["browser"]["enabled"]:
        targets.append("results/browser")
    targets.append("results/report/training_curves.png")
    if demo_world():
        targets.append(RUN.world_recovery)
        targets.append("results/demo/naming_methods.json")
    return targets


def demo_world():
    """The demo trains its CLIP on the generated world (then the recovery report runs)."""
    pairs = config["clip_training"]["pairs"]
    return bool(pairs) and Path(pairs).is_relative_to(DEMO_CLIP_PAIRS)


def check_variant_features():
    """A variant that changes features needs images: given feature folders cannot follow it."""
    from insight.core.variants import changed_stages

    for name, overrides in config["variants"].items():
        if "features" not in changed_stages(overrides):
            continue
        for dataset in {config["train_dataset"], hierarchy_dataset()}:
            if "features" in dataset_config(dataset):
                raise WorkflowError(
                    f"variants.{name}: changes the features, but dataset {dataset!r} has "
                    "only given `features:` (a variant re-extracts from `source:`)"
                )


check_variant_features()


def ablation_runs():
    """The outputs each run (``default`` and every variant) is compared on, by kind: a
    variant reads the default run's output of every stage it does not change."""
    if not config["variants"]:
        raise WorkflowError(
            "ablations: no variants are configured (`variants:` maps a name to overrides; "
            "docs/ablations.md)"
        )
    runs = {}
    for name in [None, *config["variants"]]:
        job = SimpleNamespace(variant=wildcard_of(name))
        sae, named = upstream("sae", job), upstream("naming", job)
        paths = {
            "sae": sae.sae_report,
            "families": upstream("hierarchy", job).family_quality,
            "names": named.names,
        }
        if config["interpretability"]["datasets"]:
            paths["interpretability"] = sae.path("interpretability_table.csv")
        if config["ovs"]["datasets"]:
            explained = config["ovs"]["explain_images"]
            paths["ovs"] = (named if explained else sae).path("ovs_table.csv")
        if config["classification"]["datasets"]:
            paths["classification"] = named.path("classification_table.csv")
        if demo_world():
            paths["world"] = named.world_recovery
        runs[name or DEFAULT_NAME] = paths
    return runs
