;;; smls.el --- sentence embeddings from an smls server  -*- lexical-binding: t; -*-

;; Only built-in libraries: url and json.
;; Run: emacs --batch -l clients/emacs/smls.el -f smls-demo
;; Or in Emacs: (load "clients/emacs/smls.el") (smls-embed '("Hello world!"))

;;; Code:

(require 'url)
(require 'url-http)
(require 'json)

(defvar smls-url (or (getenv "SMLS_URL") "http://127.0.0.1:8000")
  "Where the smls server listens.")

(defun smls--request (path body)
  "POST BODY (a Lisp value, sent as JSON) to PATH; return the parsed JSON answer."
  (let* ((url-request-method "POST")
         (url-request-extra-headers '(("Content-Type" . "application/json")))
         (url-request-data (encode-coding-string (json-encode body) 'utf-8))
         (buffer (url-retrieve-synchronously (concat smls-url path) t nil 60)))
    (unless buffer
      (error "smls: no answer from %s" smls-url))
    (unwind-protect
        (with-current-buffer buffer
          (goto-char url-http-end-of-headers)
          (let* ((json-object-type 'alist)
                 (json-array-type 'vector)
                 (text (decode-coding-string (buffer-substring-no-properties (point) (point-max)) 'utf-8))
                 (answer (json-read-from-string text)))
            (unless (eq url-http-response-status 200)
              (error "smls answered %s: %s" url-http-response-status
                     (alist-get 'message (alist-get 'error answer))))
            answer))
      (kill-buffer buffer))))

(defun smls-embed (texts &optional normalize)
  "Return the embeddings of TEXTS (a list of strings) as a vector of vectors.
With NORMALIZE, each has unit length."
  (alist-get 'embeddings
             (smls--request "/embed" `((message . ,(vconcat texts))
                                       (normalize . ,(if normalize t :json-false))))))

(defun smls-demo ()
  "Embed three sentences and print how similar they are."
  (let* ((texts '("The cat sits on the mat." "A cat is sitting on a rug." "Stock markets fell sharply."))
         (vectors (smls-embed texts t))
         (dot (lambda (a b) (let ((s 0.0)) (dotimes (i (length a) s) (setq s (+ s (* (aref a i) (aref b i)))))))))
    (princ (format "vectors: %d, dimension: %d\n" (length vectors) (length (aref vectors 0))))
    (princ (format "cosine(cat, cat): %.3f\n" (funcall dot (aref vectors 0) (aref vectors 1))))
    (princ (format "cosine(cat, markets): %.3f\n" (funcall dot (aref vectors 0) (aref vectors 2))))))

(provide 'smls)
;;; smls.el ends here
