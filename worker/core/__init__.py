"""The pure risk core: no faust, aiokafka, orjson or prometheus_client imports here."""
