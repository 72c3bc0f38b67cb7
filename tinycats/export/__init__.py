"""Exports of trained runs: ONNX for the web page (`onnx`), weight files (`weights`), Hub repositories (`hub`)."""
