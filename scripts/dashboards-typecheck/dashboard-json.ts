// Types the generated checks assign dashboard JSON to (see check.mjs).
//
// A dashboard file is JSON: where @grafana/schema declares a TypeScript enum (FieldColorModeId,
// ThresholdsMode, MappingType, ...), the file can only hold the enum's value ("palette-classic"),
// never the enum member. AsJson<T> is T with every string enum replaced by the union of its
// values and nothing else changed: a missing required property, a misspelled or unknown one, a
// wrong type or an enum value that does not exist are still errors under --strict.

import type { DataQuery, Dashboard } from '@grafana/schema';
import type * as BarGauge from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';
import type * as Heatmap from '@grafana/schema/dist/esm/raw/composable/heatmap/panelcfg/x/HeatmapPanelCfg_types.gen';
import type * as Stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as StateTimeline from '@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen';
import type * as Table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as TimeSeries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

export type AsJson<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? AsJson<U>[]
      : T extends object
        ? { [K in keyof T]: AsJson<T[K]> }
        : T;

export type DashboardJson = AsJson<Dashboard>;

// A panel's options and the custom part of its field config, per panel plugin, from the
// plugin's own schema. A panel type missing here is an error: add its types before using it.
export interface PanelTypes {
  bargauge: { options: BarGauge.Options; custom: Record<string, never> };
  heatmap: { options: Heatmap.Options; custom: Heatmap.FieldConfig };
  stat: { options: Stat.Options; custom: Record<string, never> };
  'state-timeline': { options: StateTimeline.Options; custom: StateTimeline.FieldConfig };
  table: { options: Table.Options; custom: Table.FieldConfig };
  timeseries: { options: TimeSeries.Options; custom: TimeSeries.FieldConfig };
}
export type PanelOptions<K extends keyof PanelTypes> = AsJson<PanelTypes[K]['options']>;
export type PanelCustom<K extends keyof PanelTypes> = AsJson<PanelTypes[K]['custom']>;

// Queries. @grafana/schema has the common part (DataQuery: refId, hide, ...); the rest is the
// query model of Grafana's Prometheus and InfluxDB (InfluxQL) datasources.
interface Ref<K extends string> {
  type: K;
  uid: string;
}
export interface PrometheusQuery extends DataQuery {
  datasource: Ref<'prometheus'>;
  expr: string;
  legendFormat?: string;
  format?: 'time_series' | 'table' | 'heatmap';
  instant?: boolean;
  range?: boolean;
  interval?: string;
  exemplar?: boolean;
  editorMode?: 'code' | 'builder';
}
export interface InfluxQLQuery extends DataQuery {
  datasource: Ref<'influxdb'>;
  query: string;
  rawQuery: true;
  resultFormat: 'time_series' | 'table' | 'logs';
  alias?: string;
}
export interface Queries {
  prometheus: PrometheusQuery;
  influxdb: InfluxQLQuery;
}
export type Query<K extends keyof Queries> = Queries[K];
