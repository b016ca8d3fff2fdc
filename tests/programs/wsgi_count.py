# A WSGI app for gunicorn (tests/servers.rs): each worker counts the
# requests it served; the answer is "PID COUNT".
import os

served = 0


def app(environ, start_response):
    global served
    served += 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%d %d\n" % (os.getpid(), served)).encode()]
