// Performance charts (uPlot): the host's CPU and memory, and one VM's CPU,
// memory and exit rate, from hostd's sampled statistics. Each chart's container
// carries the number of samples drawn in data-samples.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

function makeChart(container, leftLabel, rightLabel, thirdLabel) {
  const opts = {
    width: Math.max(300, container.clientWidth || 600),
    height: 180,
    scales: { x: { time: true }, l: {}, r: {}, t: {} },
    series: [
      {},
      { label: leftLabel, scale: 'l', stroke: '#2a7d4f', width: 2 },
      { label: rightLabel, scale: 'r', stroke: '#3060c0', width: 2 },
      // A third series has its own scale and no axis: its values are in the legend.
      ...(thirdLabel ? [{ label: thirdLabel, scale: 't', stroke: '#c07020', width: 1, dash: [4, 4] }] : []),
    ],
    axes: [{}, { scale: 'l', label: leftLabel }, { scale: 'r', side: 1, label: rightLabel, grid: { show: false } }],
  };
  return new uPlot(opts, thirdLabel ? [[], [], [], []] : [[], [], []], container);
}

export class HostChart {
  constructor(container) {
    this.container = container;
    this.plot = makeChart(container, 'CPU busy %', 'Memory used MiB');
  }
  update(stats) {
    const h = stats.history;
    const xs = h.map((s) => s.time_ms / 1000);
    this.plot.setData([xs, h.map((s) => s.cpu_busy_pct ?? null), h.map((s) => s.memory_used_mib ?? null)]);
    this.container.dataset.samples = String(h.length);
  }
}

export class VmChart {
  constructor(container) {
    this.container = container;
    this.plot = makeChart(container, 'CPU % of one core', 'Memory MiB', 'Exits/s');
  }
  clear() {
    this.plot.setData([[], [], [], []]);
    this.container.dataset.samples = '0';
  }
  // Rates between consecutive samples of the VM's counters.
  update(stats) {
    const h = stats.history;
    const xs = [], cpu = [], mem = [], exits = [];
    for (let i = 1; i < h.length; i++) {
      const dt = (h[i].time_ms - h[i - 1].time_ms) / 1000;
      if (dt <= 0) continue;
      xs.push(h[i].time_ms / 1000);
      cpu.push(((h[i].run_ns - h[i - 1].run_ns) / 1e9 / dt) * 100);
      mem.push(h[i].memory_bytes / (1 << 20));
      exits.push((h[i].exits - h[i - 1].exits) / dt);
    }
    this.plot.setData([xs, cpu, mem, exits]);
    this.container.dataset.samples = String(xs.length);
  }
}
