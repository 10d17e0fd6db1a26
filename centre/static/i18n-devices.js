// Strings of the devices pane (devices.js): zh-CN first, English second. Adds to
// window.OK_I18N, never replaces it.
(function () {
  "use strict";
  var zh = {
    "nav.devices": "设备",
    "dev.title": "各村设备",
    "dev.none": "还没有网关报告设备",
    "dev.items": "需要处理的设备问题",
    "dev.items.none": "没有待处理的设备问题",
    "dev.id": "设备",
    "dev.village": "村",
    "dev.household": "户",
    "dev.status": "状态",
    "dev.power": "供电",
    "dev.last_seen": "最后联系",
    "dev.bat": "电量",
    "dev.fw": "固件",
    "dev.never": "从未",
    "dev.ack": "已知悉",
    "dev.cleared": "已恢复",
    "dev.status.ok": "正常",
    "dev.status.lost": "失联",
    "dev.status.low_battery": "电量低",
    "dev.status.fault": "故障",
    "dev.status.tamper": "被拆动",
    "dev.power.mains": "市电",
    "dev.power.battery": "电池",
    "dev.what.lost": "设备失联",
    "dev.what.low_battery": "电量低",
    "dev.what.fault": "设备故障",
    "dev.what.tamper": "设备被拆动"
  };
  var en = {
    "nav.devices": "Devices",
    "dev.title": "Devices by village",
    "dev.none": "No gateway has reported a device yet",
    "dev.items": "Device problems to handle",
    "dev.items.none": "No device problem waiting",
    "dev.id": "Device",
    "dev.village": "Village",
    "dev.household": "Household",
    "dev.status": "Status",
    "dev.power": "Power",
    "dev.last_seen": "Last heard",
    "dev.bat": "Battery",
    "dev.fw": "Firmware",
    "dev.never": "never",
    "dev.ack": "Noted",
    "dev.cleared": "recovered",
    "dev.status.ok": "ok",
    "dev.status.lost": "LOST",
    "dev.status.low_battery": "low battery",
    "dev.status.fault": "fault",
    "dev.status.tamper": "tampered",
    "dev.power.mains": "mains",
    "dev.power.battery": "battery",
    "dev.what.lost": "device lost",
    "dev.what.low_battery": "low battery",
    "dev.what.fault": "device fault",
    "dev.what.tamper": "device tampered with"
  };
  var all = window.OK_I18N = window.OK_I18N || {};
  all["zh-CN"] = Object.assign(all["zh-CN"] || {}, zh);
  all["en"] = Object.assign(all["en"] || {}, en);
})();
