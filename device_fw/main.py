# Entry point of a onekey device, on the ESP32 and on the MicroPython unix port alike.
# Reads config.json from the working directory, picks the HAL ("esp32" or "sim") and runs the
# button application under asyncio.run with a supervisor and a global exception handler.
# Modules are imported one at a time with a collection in between: compiling a module from
# source needs a transient parse tree, and a small heap would fragment otherwise.
import gc
import sys

gc.collect()
import asyncio  # noqa: E402

gc.collect()
import okproto  # noqa: E402, F401

gc.collect()
import okmqtt  # noqa: E402, F401

gc.collect()
import store  # noqa: E402, F401

gc.collect()
import presslogic  # noqa: E402, F401

gc.collect()
import feedback  # noqa: E402, F401

gc.collect()
import config  # noqa: E402

gc.collect()
import link  # noqa: E402, F401

gc.collect()
from button import App, log  # noqa: E402

gc.collect()
from time import ticks_diff, ticks_ms  # noqa: E402

from micropython import const  # noqa: E402

_STALL_MS = const(5000)  # the button loop must run at least this often to feed the watchdog


def make_hal(cfg: dict):
    gc.collect()
    if cfg["hal"] == "sim":
        from hal_sim import SimHal

        return SimHal(cfg)
    from hal_esp32 import Esp32Hal

    return Esp32Hal(cfg)


async def supervise(app: App, name: str, make) -> None:
    # Restarts a task that died of an unexpected error; logs it and counts it.
    while True:
        try:
            await make()
            log(name, "returned; restarting")
        except Exception as ex:  # the top-level supervisor: anything else would stop the device
            app.errors += 1
            log(name, "crashed:", type(ex).__name__, ex)
            sys.print_exception(ex)
        await asyncio.sleep_ms(1000)


async def run(cfg: dict) -> None:
    hal = make_hal(cfg)
    app = App(cfg, hal)
    app.boot()

    def on_error(loop, context) -> None:
        app.errors += 1
        ex = context.get("exception")
        log("unhandled error in a task:", context.get("message"))
        if ex is not None:
            sys.print_exception(ex)

    asyncio.get_event_loop().set_exception_handler(on_error)
    asyncio.create_task(supervise(app, "buttons", app.buttons))
    asyncio.create_task(supervise(app, "feedback", app.fb.run))
    asyncio.create_task(supervise(app, "link", app.link.run))
    await hal.start(app)
    while True:
        # Feed the watchdog only while the button loop is alive: a hung device restarts.
        if ticks_diff(ticks_ms(), app.alive) < _STALL_MS:
            hal.feed()
        gc.collect()  # little and often keeps a small heap from fragmenting
        await asyncio.sleep_ms(1000)


def main() -> None:
    try:
        cfg = config.load()
    except config.ConfigError as ex:
        print("config:", ex)
        sys.exit(2)
    try:
        asyncio.run(run(cfg))
    except KeyboardInterrupt:
        pass
    except Exception as ex:  # last resort: log and restart the device
        print("fatal:", type(ex).__name__, ex)
        sys.print_exception(ex)
        if cfg["hal"] == "esp32":
            import machine

            machine.reset()
        sys.exit(1)
    finally:
        asyncio.new_event_loop()


main()
