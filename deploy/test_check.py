"""deploy/check.py must fail on broken manifests and Dockerfiles: each case
breaks one thing in a copy of the real files and expects its own message.

    python -m unittest discover -s deploy -p 'test_check.py'
"""

import re
import shutil
import tempfile
import unittest
from pathlib import Path

import check

REPO = Path(__file__).resolve().parent.parent


class Broken(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="deploy-check-"))
        shutil.copytree(REPO / "deploy/kubernetes", self.tmp / "kubernetes")
        shutil.copy(REPO / "Dockerfile", self.tmp / "Dockerfile")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def edit(self, rel: str, old: str, new: str) -> None:
        path = self.tmp / rel
        text = path.read_text()
        self.assertIn(old, text, f"the case's anchor is gone from {rel}: update the test")
        path.write_text(text.replace(old, new, 1))

    def problems(self, hadolint: bool = False) -> list[str]:
        lines, _ = check.run_checks(REPO, self.tmp / "kubernetes", self.tmp / "Dockerfile", hadolint)
        return lines

    def assertCaught(self, pattern: str, hadolint: bool = False) -> None:
        lines = self.problems(hadolint)
        self.assertTrue(any(re.search(pattern, x) for x in lines), f"want /{pattern}/ among {lines}")

    def test_the_real_files_pass(self):
        self.assertEqual(self.problems(hadolint=True), [])

    # ---- schemas ----
    def test_misspelled_field_fails_the_strict_schema(self):
        self.edit("kubernetes/gateway.yaml", "readinessProbe:", "readinesProbe:")
        self.assertCaught(r"Deployment/osprey-gateway: invalid for Kubernetes .*readinesProbe")

    def test_wrong_type_fails_the_schema(self):
        self.edit("kubernetes/node-gpu.yaml", "maxReplicas: 8", 'maxReplicas: "eight"')
        self.assertCaught(r"HorizontalPodAutoscaler/osprey-node-gpu: invalid .*maxReplicas")

    def test_unknown_api_version_has_no_schema(self):
        self.edit("kubernetes/node-gpu.yaml", "apiVersion: autoscaling/v2", "apiVersion: autoscaling/v9")
        self.assertCaught(r"no schema")

    # ---- what the schemas cannot see ----
    def test_running_as_root_is_refused(self):
        self.edit("kubernetes/node-gpu.yaml", "runAsNonRoot: true\n            runAsUser", "runAsNonRoot: false\n            runAsUser")
        self.assertCaught(r"osprey-node-gpu container osprey: securityContext.runAsNonRoot must be true")

    def test_writable_root_filesystem_is_refused(self):
        self.edit("kubernetes/gateway.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")
        self.assertCaught(r"readOnlyRootFilesystem must be true")

    def test_capabilities_must_be_dropped(self):
        self.edit("kubernetes/gateway.yaml", 'capabilities: { drop: ["ALL"] }', 'capabilities: { drop: ["NET_RAW"] }')
        self.assertCaught(r"capabilities.drop must hold ALL")

    def test_gpu_node_without_a_gpu(self):
        self.edit("kubernetes/node-gpu.yaml", "limits: { cpu: \"4\", memory: 8Gi, ephemeral-storage: 4Gi, nvidia.com/gpu: 1 }",
                  "limits: { cpu: \"4\", memory: 8Gi, ephemeral-storage: 4Gi }")
        self.assertCaught(r"GPU node without resources.limits nvidia.com/gpu")

    def test_readiness_must_ask_readyz(self):
        self.edit("kubernetes/node-gpu.yaml", "path: /readyz", "path: /healthz")
        self.assertCaught(r"readinessProbe asks /healthz, want /readyz")

    def test_service_that_selects_nothing(self):
        self.edit("kubernetes/node-service.yaml", "clusterIP: None", "clusterIP: None\n  sessionAffinity: None")
        self.edit("kubernetes/node-service.yaml", "    app.kubernetes.io/component: node\n  ports:",
                  "    app.kubernetes.io/component: nodes\n  ports:")
        self.assertCaught(r"Service/osprey-node: selector .* selects no Deployment")

    def test_hpa_on_a_metric_osprey_does_not_export(self):
        self.edit("kubernetes/node-gpu.yaml", "name: osprey_queue_depth", "name: osprey_queue_length")
        self.assertCaught(r"metric osprey_queue_length is not one osprey exports")

    def test_hpa_target_must_exist(self):
        self.edit("kubernetes/node-gpu.yaml", "    name: osprey-node-gpu\n  minReplicas", "    name: osprey-node\n  minReplicas")
        self.assertCaught(r"scaleTargetRef Deployment/osprey-node is not in the manifests")

    def test_missing_secret_key(self):
        self.edit("kubernetes/gateway.yaml", "key: admin-token", "key: admin")
        self.assertCaught(r"Secret osprey-tokens has no key admin")

    def test_pool_must_name_the_headless_service(self):
        self.edit("kubernetes/gateway-config.yaml", "osprey-node.osprey.svc", "osprey-nodes.osprey.svc")
        self.assertCaught(r"upstream nodes: .* is not a headless Service")

    def test_gateway_route_to_an_undefined_pool(self):
        self.edit("kubernetes/gateway-config.yaml", 'upstream = "nodes"', 'upstream = "gpus"')
        self.assertCaught(r"upstream 'gpus' is not in \[upstreams\]")

    def test_node_config_names_a_file_the_image_lacks(self):
        self.edit("kubernetes/node-config.yaml", "plugin/yolo.wasm", "plugin/yolov8.wasm")
        self.assertCaught(r"names /opt/osprey/target/wasm32-wasip2/plugin/yolov8.wasm, which the image does not hold")

    def test_node_listening_on_loopback(self):
        self.edit("kubernetes/node-config.yaml", 'listen = "0.0.0.0:8080"', 'listen = "127.0.0.1:8080"')
        self.assertCaught(r"other pods cannot reach it")

    def test_kustomization_lists_a_missing_file(self):
        self.edit("kubernetes/kustomization.yaml", "- node-gpu.yaml", "- node-gpus.yaml")
        self.assertCaught(r"resource node-gpus.yaml does not exist")

    # ---- Dockerfile ----
    def test_single_stage_dockerfile(self):
        (self.tmp / "Dockerfile").write_text("FROM debian:bookworm-slim\nCOPY osprey /usr/local/bin/\n")
        self.assertCaught(r"1 stage\(s\): want a build stage")

    def test_final_stage_running_as_root(self):
        self.edit("Dockerfile", "USER 10001:10001", "USER root")
        self.assertCaught(r"USER root: use a numeric UID")

    def test_final_stage_without_user(self):
        self.edit("Dockerfile", "USER 10001:10001\n", "")
        self.assertCaught(r"final stage has no USER")

    def test_build_tools_in_the_final_stage(self):
        self.edit("Dockerfile", "ffmpeg ca-certificates", "ffmpeg ca-certificates build-essential")
        self.assertCaught(r"final stage installs build tool 'build-essential'")

    def test_model_not_copied(self):
        self.edit("Dockerfile", "COPY --from=build /stage/models/ /opt/osprey/models/\n", "")
        self.assertCaught(r"config/osprey.toml needs /opt/osprey/models/yolov5s/model.onnx")

    def test_plugin_not_copied(self):
        self.edit("Dockerfile", " /src/target/wasm32-wasip2/plugin/stego.wasm", "")
        self.assertCaught(r"needs /opt/osprey/target/wasm32-wasip2/plugin/stego.wasm")

    def test_onnxruntime_not_where_ort_dylib_path_says(self):
        self.edit("Dockerfile", "ORT_DYLIB_PATH=/opt/osprey/onnxruntime/", "ORT_DYLIB_PATH=/usr/lib/")
        self.assertCaught(r"ORT_DYLIB_PATH=/usr/lib/libonnxruntime.so.1.31.1, but the final stage copies nothing there")

    def test_build_stage_on_another_rust(self):
        self.edit("Dockerfile", "FROM rust:1.95-bookworm AS build", "FROM rust:1.80-bookworm AS build")
        self.assertCaught(r"want rust:1.95-bookworm")

    def test_hadolint_reports_a_lint(self):
        self.edit("Dockerfile", "WORKDIR /src", "RUN cd /src")
        self.assertCaught(r"hadolint.*DL3003", hadolint=True)


if __name__ == "__main__":
    unittest.main()
