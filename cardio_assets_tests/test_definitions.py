"""The code location loads, holds the graph, partitions, checks and jobs users see, and reads its settings at run time."""

from dagster import AssetKey, asset, materialize

from cardio_assets.cohort.cells import CELL_KEYS
from cardio_assets.definitions import defs
from cardio_assets.defs.resources import INT_VARS, STRING_VARS, PipelineSettings


def test_definitions_load_with_the_whole_graph():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"cohort_source", "cohort", "cohort_quarantine", "patient_splits", "subgroup_cells", "frames"} <= keys
    assert graph.get(AssetKey("frames")).partitions_def.get_partition_keys() == list(CELL_KEYS)
    assert AssetKey("cohort") in graph.get(AssetKey("frames")).parent_keys


def test_checks_and_jobs_are_registered():
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert {"cohort_schema", "cohort_unique_ids", "quarantine_share", "no_patient_in_two_splits", "cell_minimum_counts", "frames_valid",
            "synthetic_count", "synthetic_valid", "qc_pass_rate", "memorization", "masks_from_training_only",
            "no_evaluation_patient_in_training", "classifiers_beat_chance", "report_rows_present"} <= checks
    for job in ("cohort_job", "frames_job", "generator_job", "synthetic_job", "classifiers_job", "reports_job"):
        assert defs.resolve_job_def(job)
    assert defs.resolve_schedule_def("weekly_synthetic_regeneration").default_status.value == "STOPPED"


def test_settings_are_read_from_the_environment_when_a_run_starts(monkeypatch, tmp_path):
    for var in [*STRING_VARS.values(), *INT_VARS.values()]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CARDIO_SEED", "7")
    monkeypatch.setenv("CARDIO_DATA_LAKE", "lake")
    settings = PipelineSettings.bound_to_env_vars()
    monkeypatch.setenv("CARDIO_SEED", "8")  # changed after the code location loaded
    seen = {}

    @asset
    def probe(settings: PipelineSettings) -> None:
        seen.update(profile=settings.profile, seed=settings.seed, data_lake=settings.data_lake)

    assert materialize([probe], resources={"settings": settings}).success
    assert seen == {"profile": "demo", "seed": 8, "data_lake": str(tmp_path / "lake")}  # unset: the default
    launchpad = {"resources": {"settings": {"config": {"seed": 3, "data_lake": "other"}}}}
    assert materialize([probe], resources={"settings": settings}, run_config=launchpad).success
    assert seen == {"profile": "demo", "seed": 3, "data_lake": str(tmp_path / "other")}


def test_model_folders_are_stored_relative_to_the_lake_and_found_where_the_lake_now_is(tmp_path):
    first = PipelineSettings(data_lake=str(tmp_path / "lake"))
    stored = first.lake_relative(first.models_dir() / "controlnet" / "controlnet")
    assert stored == "models/controlnet/controlnet"
    assert first.lake_relative(tmp_path / "sd-2-1-base") == str(tmp_path / "sd-2-1-base")  # outside the lake: as given
    moved = PipelineSettings(data_lake=str(tmp_path / "elsewhere" / "lake"))
    assert moved.lake_path(stored) == tmp_path / "elsewhere" / "lake" / "models" / "controlnet" / "controlnet"
    assert moved.lake_path(str(tmp_path / "sd-2-1-base")) == tmp_path / "sd-2-1-base"


def test_the_gpu_resource_gives_both_model_families_its_device_and_dtype():
    import torch

    from cardio_assets.classify.config import ClassifierConfig
    from cardio_assets.defs.gpu import GpuResource
    from cardio_assets.generation.config import DiffusionConfig

    cpu_fp32 = GpuResource(device="cpu", dtype="float32", cpu_threads=1)
    classifier = cpu_fp32.apply(ClassifierConfig.smoke())
    diffusion = cpu_fp32.apply(DiffusionConfig.smoke())
    assert (classifier.device, classifier.dtype, classifier.torch_threads) == ("cpu", "float32", 1)
    assert (diffusion.device, diffusion.dtype, diffusion.cpu_threads) == ("cpu", "float32", 1)
    assert classifier.compute_dtype() == torch.float32
    assert GpuResource(device="cpu", dtype="bfloat16").apply(ClassifierConfig.smoke()).compute_dtype() == torch.bfloat16
    assert GpuResource().apply(ClassifierConfig.smoke()).dtype == "auto"
