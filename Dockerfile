# rest-consumer: one image for the api, reader, worker and flower services.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN useradd --system --uid 10001 --home /app rest-consumer

COPY requirements.txt pyproject.toml README.md ./
RUN pip install -r requirements.txt
COPY rest_consumer ./rest_consumer
COPY kafka ./kafka
COPY config ./config
RUN pip install --no-deps .

USER rest-consumer
EXPOSE 9013 5555
ENTRYPOINT ["rest-consumer"]
CMD ["api"]
