# One image for every gateway process; compose.yaml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY plumbing plumbing
COPY shared shared
COPY api api
COPY workers workers
COPY llm_gateway llm_gateway
COPY simulator simulator
COPY devstack devstack
COPY cli cli
RUN pip install .
RUN useradd --system gateway
USER gateway
EXPOSE 8000
CMD ["python", "-m", "api.serve", "--host", "0.0.0.0", "--port", "8000", "--processes", "2"]
