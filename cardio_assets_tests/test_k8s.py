"""Kubernetes without a cluster: the Jobs that dagster-k8s's own step handler would create for our steps.

`K8sStepHandler.launch_step` (dagster_k8s.executor) builds each step's V1Job from the run launcher,
the code location's container context (what the Helm chart passes to launched runs), the
executor's config (CARDIO_K8S_*) and the step's `dagster-k8s/config` op tags; only the call to the
Kubernetes API is replaced, so the test sees the Job it would have sent.
"""

import json
from pathlib import Path

import pytest
import yaml
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._core.test_utils import create_run_for_test, instance_for_test
from dagster._grpc.types import ExecuteStepArgs
from dagster_k8s.client import DagsterKubernetesClient
from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
from kubernetes.client import V1PersistentVolumeClaim

from cardio_assets.definitions import EXECUTOR_VAR, build_definitions, defs, executor_from_env
from cardio_assets.defs.gpu import DATA_PARALLEL_VAR, GPU_POOL, data_parallel_from_env
from cardio_assets.defs.k8s import (
    GPU_RESOURCE,
    K8S_CONFIG_TAG,
    VARS,
    K8sSettings,
    gpu_k8s_config,
    k8s_executor_config,
)
from cardio_assets.defs.resources import INT_VARS, STRING_VARS, PipelineSettings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
USER_CODE_IMAGE = "registry.example.org/cardio-assets:abc123"
PIPELINE_ENV = {"CARDIO_PROFILE": "paper", "CARDIO_DATA_LAKE": "/data/lake", "CARDIO_SD_BACKBONE_DIR": "/weights/sd21-base"}
# What the Helm chart's user-code deployment (deploy/values.yaml) hands to the runs it launches
# (includeConfigInLaunchedRuns): its env, the data lake's claim mounted at the same path in every pod,
# the code server's resources, namespace and service account.
HELM_CONTAINER_CONTEXT = {
    "k8s": {
        "namespace": "dagster",
        "service_account_name": "dagster-dagster-user-deployments-user",
        "env_config_maps": ["dagster-dagster-user-deployments-cardio-assets-user-env"],
        "env": [{"name": name, "value": value} for name, value in PIPELINE_ENV.items()],
        "volumes": [{"name": "data-lake", "persistentVolumeClaim": {"claimName": "cardio-data-lake"}}],
        "volume_mounts": [{"name": "data-lake", "mountPath": "/data/lake"}],
        "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    }
}
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: test, user: {token: test}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
"""


@pytest.fixture
def cardio_env(monkeypatch):
    """A deployment's environment: only the variables set here (the runner's own CARDIO_* removed)."""
    for var in [*STRING_VARS.values(), *INT_VARS.values(), *VARS.values(), EXECUTOR_VAR]:
        monkeypatch.delenv(var, raising=False)
    for name, value in PIPELINE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(EXECUTOR_VAR, "k8s")
    return monkeypatch


@pytest.fixture
def k8s_instance(tmp_path):
    """A Dagster instance whose run launcher is the K8sRunLauncher, as the Helm chart configures it."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    launcher = {
        "module": "dagster_k8s",
        "class": "K8sRunLauncher",
        "config": {
            "instance_config_map": "dagster-instance",
            "dagster_home": "/opt/dagster/dagster_home",
            "postgres_password_secret": "dagster-postgresql-secret",
            "service_account_name": "dagster",
            "load_incluster_config": False,
            "kubeconfig_file": str(kubeconfig),
        },
    }
    with instance_for_test(overrides={"run_launcher": launcher}) as instance:
        yield instance


def launch_step(instance, monkeypatch, job_name: str, step_key: str):
    """The V1Job and namespace that the k8s executor of our code location creates for one step."""
    definitions = build_definitions(PipelineSettings.bound_to_env_vars(), executor=executor_from_env())
    job = definitions.resolve_job_def(job_name)
    assert job.executor_def.name == "k8s"
    executor_config = ResolvedRunConfig.build(job, {}).execution.execution_engine_config
    executor = job.executor_def.executor_creation_fn(
        InitExecutorContext(job=InMemoryJob(job), executor_def=job.executor_def, executor_config=executor_config, instance=instance)
    )
    repository = ReconstructableRepository.for_module(
        "cardio_assets.definitions", "defs", container_image=USER_CODE_IMAGE, container_context=HELM_CONTAINER_CONTEXT
    )
    origin = repository.get_reconstructable_job(job_name).get_python_origin()
    run = create_run_for_test(instance, job_name=job_name, job_code_origin=origin)
    plan = create_execution_plan(job)
    context = StepHandlerContext(
        instance=instance,
        plan_context=PlanOrchestrationContext(
            plan_data=PlanData(job=InMemoryJob(job), dagster_run=run, instance=instance, execution_plan=plan,
                               raise_on_error=True, retry_mode=RetryMode.DISABLED),
            log_manager=create_context_free_log_manager(instance, run),
            executor=executor,
            output_capture=None,
        ),
        steps=plan.steps,
        execute_step_args=ExecuteStepArgs(origin, run.run_id, [step_key]),
    )
    sent = []
    monkeypatch.setattr(DagsterKubernetesClient, "create_namespaced_job_with_retries",
                        lambda self, body, namespace, **_: sent.append((body, namespace)))
    list(executor._step_handler.launch_step(context))  # the executor's own step handler
    assert len(sent) == 1
    return sent[0]


def container_and_pod(job):
    pod = job.spec.template.spec
    assert len(pod.containers) == 1
    return pod.containers[0], pod


def test_gpu_step_gets_one_gpu_its_nodes_shared_memory_and_the_run_environment(cardio_env, k8s_instance):
    cardio_env.setenv("CARDIO_K8S_IMAGE", "registry.example.org/cardio-assets:gpu-build")
    cardio_env.setenv("CARDIO_K8S_NAMESPACE", "cardio")
    cardio_env.setenv("CARDIO_K8S_SERVICE_ACCOUNT", "cardio-steps")
    job, namespace = launch_step(k8s_instance, cardio_env, "generator_job", "controlnet")
    container, pod = container_and_pod(job)

    assert namespace == "cardio"
    assert pod.service_account_name == "cardio-steps"
    assert container.image == "registry.example.org/cardio-assets:gpu-build"
    assert container.command is None and container.args == ["dagster", "api", "execute_step"]  # the image has no ENTRYPOINT
    assert job.metadata.labels["dagster/op"] == "controlnet"
    env = {e.name: e.value for e in container.env}
    assert len(env) == len(container.env)  # each variable once
    assert {name: env.get(name) for name in PIPELINE_ENV} == PIPELINE_ENV
    assert env["CARDIO_EXECUTOR"] == "k8s"
    assert env["DAGSTER_RUN_STEP_KEY"] == "controlnet"
    assert env["DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS"]  # what to run: the run, the step, the code location
    config_maps = [source.config_map_ref.name for source in container.env_from if source.config_map_ref]
    assert config_maps == HELM_CONTAINER_CONTEXT["k8s"]["env_config_maps"]

    resources = container.resources
    assert resources.limits[GPU_RESOURCE] == "1" and resources.requests[GPU_RESOURCE] == "1"
    assert resources.limits["memory"] == resources.requests["memory"] == "32Gi"
    assert resources.requests["cpu"] == "4"
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [(GPU_RESOURCE, "Exists", "NoSchedule")]
    assert pod.node_selector is None  # none by default: the GPU request alone picks GPU nodes

    volumes = {v.name: v for v in pod.volumes}
    assert volumes["dshm"].empty_dir.medium == "Memory" and volumes["dshm"].empty_dir.size_limit == "8Gi"
    assert volumes["data-lake"].persistent_volume_claim.claim_name == "cardio-data-lake"
    mounts = {m.mount_path: m.name for m in container.volume_mounts}
    assert mounts == {"/dev/shm": "dshm", "/data/lake": "data-lake"}


def test_cpu_step_asks_for_cpu_and_memory_only_in_the_user_code_image(cardio_env, k8s_instance):
    job, namespace = launch_step(k8s_instance, cardio_env, "cohort_job", "cohort")
    container, pod = container_and_pod(job)

    # nothing set on the executor: the user-code deployment's image, namespace and account
    assert container.image == USER_CODE_IMAGE
    assert namespace == "dagster"
    assert pod.service_account_name == HELM_CONTAINER_CONTEXT["k8s"]["service_account_name"]
    assert container.args == ["dagster", "api", "execute_step"]
    env = {e.name: e.value for e in container.env}
    assert len(env) == len(container.env)
    assert {name: env.get(name) for name in PIPELINE_ENV} == PIPELINE_ENV

    # the step's tags override the code server's resources
    assert container.resources.requests == {"cpu": "2", "memory": "8Gi"}
    assert container.resources.limits == {"memory": "8Gi"}
    assert pod.tolerations is None and pod.node_selector is None
    assert [v.name for v in pod.volumes] == ["data-lake"]
    assert [m.mount_path for m in container.volume_mounts] == ["/data/lake"]


def test_every_gpu_pool_asset_asks_for_a_gpu_and_no_other_does():
    graph = defs.resolve_asset_graph()
    gpu_ops, cpu_ops = set(), set()
    for key in graph.get_all_asset_keys():  # a multi-asset's outputs share its op
        node_def = graph.assets_def_for_key(key).node_def
        config = get_user_defined_k8s_config(node_def.tags)  # validated against dagster-k8s's schema
        limits = config.container_config["resources"].get("limits", {})
        requests = config.container_config["resources"]["requests"]
        if node_def.pool == GPU_POOL:
            gpu_ops.add(node_def.name)
            assert limits[GPU_RESOURCE] == "1", node_def.name
            assert {v["name"] for v in config.pod_spec_config["volumes"]} == {"dshm"}
        else:
            cpu_ops.add(node_def.name)
            assert GPU_RESOURCE not in limits and GPU_RESOURCE not in requests, node_def.name
            assert requests["cpu"] and requests["memory"], node_def.name
    assert gpu_ops == {"diffusion_backbone", "controlnet", "attribute_predictors", "synthetic_frames", "classifier_strategy_runs", "realism_report",
                       "label_only_controlnet", "label_only_synthetic_frames", "conditioning_ablation"}  # the last three: the ablation
    assert cpu_ops == {"cohort_source", "cohort", "patient_splits", "subgroup_cells", "frames", "classifier_runs", "fairness_report"}


def test_gpu_pod_settings_come_from_the_environment():
    settings = K8sSettings.from_env({
        "CARDIO_K8S_GPU_NODE_SELECTOR": '{"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}',
        "CARDIO_K8S_GPU_TOLERATIONS": '[{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]',
        "CARDIO_K8S_GPU_MEMORY": "96Gi",
        "CARDIO_K8S_GPU_CPU": "12",
        "CARDIO_K8S_SHM_SIZE": "16Gi",
    })
    tags = {K8S_CONFIG_TAG: json.dumps(gpu_k8s_config(settings))}
    job = construct_dagster_k8s_job(DagsterK8sJobConfig(job_image=USER_CODE_IMAGE), ["dagster", "api", "execute_step"], "step-job",
                                    user_defined_k8s_config=get_user_defined_k8s_config(tags))
    container, pod = container_and_pod(job)
    assert pod.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert [(t.key, t.value, t.effect) for t in pod.tolerations] == [("dedicated", "gpu", "NoSchedule")]
    assert container.resources.limits == {"memory": "96Gi", GPU_RESOURCE: "1"}
    assert container.resources.requests == {"cpu": "12", "memory": "96Gi", GPU_RESOURCE: "1"}
    assert pod.volumes[0].empty_dir.size_limit == "16Gi"
    assert container.args == ["dagster", "api", "execute_step"]


def test_a_data_parallel_controlnet_step_asks_for_one_gpu_per_process():
    assert data_parallel_from_env({}) == 1
    assert data_parallel_from_env({DATA_PARALLEL_VAR: "4"}) == 4
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(ValueError, match=DATA_PARALLEL_VAR):
            data_parallel_from_env({DATA_PARALLEL_VAR: bad})
    tags = {K8S_CONFIG_TAG: json.dumps(gpu_k8s_config(K8sSettings(), gpus=4))}
    job = construct_dagster_k8s_job(DagsterK8sJobConfig(job_image=USER_CODE_IMAGE), ["dagster", "api", "execute_step"], "step-job",
                                    user_defined_k8s_config=get_user_defined_k8s_config(tags))
    container, _ = container_and_pod(job)
    assert container.resources.limits[GPU_RESOURCE] == container.resources.requests[GPU_RESOURCE] == "4"


@pytest.mark.parametrize("var, value", [
    ("CARDIO_K8S_GPU_NODE_SELECTOR", "gpu=true"),
    ("CARDIO_K8S_GPU_NODE_SELECTOR", '["gpu"]'),
    ("CARDIO_K8S_GPU_TOLERATIONS", '{"key": "gpu"}'),
    ("CARDIO_K8S_GPU_MEMORY", "32 GB"),
    ("CARDIO_K8S_SHM_SIZE", "lots"),
])
def test_a_malformed_setting_fails_when_the_code_location_loads(var, value):
    with pytest.raises(ValueError, match=var):
        K8sSettings.from_env({var: value})


def test_executor_forwards_every_cardio_variable_and_leaves_the_rest_to_the_deployment():
    environ = {"CARDIO_PROFILE": "paper", "CARDIO_K8S_ENV_VARS": "HF_HUB_OFFLINE, TORCH_HOME", "PATH": "/usr/bin"}
    assert k8s_executor_config(environ=environ) == {"env_vars": ["CARDIO_K8S_ENV_VARS", "CARDIO_PROFILE", "HF_HUB_OFFLINE", "TORCH_HOME"]}
    environ |= {"CARDIO_K8S_IMAGE": "img:1", "CARDIO_K8S_NAMESPACE": "ns", "CARDIO_K8S_SERVICE_ACCOUNT": "sa"}
    config = k8s_executor_config(environ=environ)
    assert (config["job_image"], config["job_namespace"], config["service_account_name"]) == ("img:1", "ns", "sa")


def test_cardio_executor_selects_the_executor_of_every_job(monkeypatch):
    monkeypatch.delenv(EXECUTOR_VAR, raising=False)
    assert executor_from_env() is None  # unset: Dagster's default, as before
    settings = PipelineSettings()
    jobs = ("cohort_job", "frames_job", "generator_job", "synthetic_job", "classifiers_job", "reports_job")
    default = build_definitions(settings, executor=executor_from_env({}))
    assert {default.resolve_job_def(j).executor_def.name for j in jobs} == {"multi_or_in_process_executor"}
    for name, expected in [("in_process", "in_process"), ("multiprocess", "multiprocess"), ("k8s", "k8s")]:
        chosen = build_definitions(settings, executor=executor_from_env({EXECUTOR_VAR: name}))
        assert {chosen.resolve_job_def(j).executor_def.name for j in jobs} == {expected}
        assert chosen.resolve_implicit_global_asset_job_def().executor_def.name == expected
    k8s_executor = executor_from_env({EXECUTOR_VAR: "k8s", "CARDIO_K8S_IMAGE": "img:2"})
    k8s_job = build_definitions(settings, executor=k8s_executor).resolve_job_def("synthetic_job")
    assert ResolvedRunConfig.build(k8s_job, {}).execution.execution_engine_config["job_image"] == "img:2"
    with pytest.raises(ValueError, match="CARDIO_EXECUTOR"):
        executor_from_env({EXECUTOR_VAR: "celery"})


def test_helm_values_serve_this_code_location_with_the_k8s_executor_and_a_valid_gpu_config():
    values = yaml.safe_load((DEPLOY / "values.yaml").read_text())
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "cardio_assets.definitions"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["concurrency"]["pools"]["defaultLimit"] >= 1
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert executor_from_env(env).name == "k8s"
    settings = K8sSettings.from_env(env)  # parses, as the code location will
    assert gpu_k8s_config(settings)["container_config"]["resources"]["limits"][GPU_RESOURCE] == "1"
    # the data lake: the claim of deploy/pvc.yaml, mounted where CARDIO_DATA_LAKE points
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in deployment["volumeMounts"]}
    assert claims[mounts[env["CARDIO_DATA_LAKE"]]] == "cardio-data-lake"
    # pretrained weights: files on the read-only weights claim
    for var in ("CARDIO_SD_BACKBONE_DIR", "CARDIO_RESNET_WEIGHTS", "CARDIO_INCEPTION_WEIGHTS"):
        assert env[var].startswith("/weights/")
    assert claims[mounts["/weights"]] == "cardio-weights"
    docs = yaml.safe_load_all((DEPLOY / "pvc.yaml").read_text())
    pvcs = [k8s_model_from_dict(V1PersistentVolumeClaim, k8s_snake_case_dict(V1PersistentVolumeClaim, doc)) for doc in docs]
    assert {pvc.metadata.name: pvc.spec.access_modes for pvc in pvcs} == {
        "cardio-data-lake": ["ReadWriteMany"], "cardio-weights": ["ReadWriteMany"]}
