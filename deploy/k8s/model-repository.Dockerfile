# The exported model repository as an image, copied by the Triton pod's init container into an
# emptyDir (deploy/k8s/triton-deployment.yaml). Export the GPU models first (docker-compose.gpu.yml
# lists the commands), then build with model_repository/ as the context, so that only it is sent:
#   docker build -f deploy/k8s/model-repository.Dockerfile -t speech-moderation/models:TAG model_repository
# Tag it per export: the tag pins the models a Deployment revision serves, and a rollback is a tag.
FROM busybox:1.36
COPY . /model_repository/
