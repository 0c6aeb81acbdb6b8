"""Post-training int8 quantization: calibration, the SQNR guard, the QDQ rewrite and its report.

    graph, report = tf.quantize(graph, X_cal)          # or tf.compile(model, x, quantize="int8", calibration=X_cal)

    %y = linear(%x, %w, %b) : f32[64,10]
        ->  %xq = quantize(%x, %sx, %zx) {dtype=i8} : i8[64,128]
            %xd = dequantize(%xq, %sx, %zx) : f32[64,128]
            %wd = dequantize(%wq, %sw, %zw) : f32[128,10]
            %y = linear(%xd, %wd, %b) : f32[64,10]

config.py holds QuantConfig; quantize.py decides which layers and with which parameters
(calibration runs, the SQNR guard) and report.py says what it did (QuantReport, behind
cm.quant_report()); calibration.py computes scales and zero points; insert_quant.py writes the QDQ
form above. The pipeline's lower-quant pass (passes/lower_quant.py)
then makes int8 qlinear / qconv2d layers of it.
"""

from .calibration import QuantParams, activation_params, tinytorch_params, weight_params
from .config import QuantConfig
from .insert_quant import LayerQuant, insert_quant, quantized_weight
from .quantize import layer_name, quantize, sqnr_db, worst_channel_sqnr_db
from .report import QuantReport

__all__ = [
    "LayerQuant", "QuantConfig", "QuantParams", "QuantReport", "activation_params", "insert_quant", "layer_name",
    "quantize", "quantized_weight", "sqnr_db", "tinytorch_params", "weight_params", "worst_channel_sqnr_db",
]
