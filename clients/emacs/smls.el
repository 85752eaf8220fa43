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

(defun smls--request (path &optional body)
  "POST BODY (a Lisp value, sent as JSON) to PATH, or GET PATH without BODY; return the parsed JSON answer."
  (let* ((url-request-method (if body "POST" "GET"))
         (url-request-extra-headers (when body '(("Content-Type" . "application/json"))))
         (url-request-data (when body (encode-coding-string (json-encode body) 'utf-8)))
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

(defun smls-embed (texts &optional normalize model)
  "Return the embeddings of TEXTS (a list of strings) as a vector of vectors.
With NORMALIZE, each has unit length.  MODEL names a served model; nil
is sent as JSON null, which smls reads as \"not given\": the default model."
  (alist-get 'embeddings
             (smls--request "/embed" `((message . ,(vconcat texts))
                                       (normalize . ,(if normalize t :json-false))
                                       (model . ,model)))))

(defun smls-models ()
  "The served models: a list of (NAME . KIND), the default first marked by `smls-default-model'."
  (mapcar (lambda (m) (cons (alist-get 'name m) (alist-get 'kind m)))
          (alist-get 'models (smls--request "/models"))))

(defun smls-default-model ()
  "The name of the model a request that names none gets."
  (alist-get 'default (smls--request "/models")))

(defun smls-rerank (query documents &optional model)
  "Rank DOCUMENTS (a list of strings) by relevance to QUERY, best first.
Return (MODEL SCORER INDEXES): who ranked them, how, and the documents' indexes."
  (let ((answer (smls--request "/rerank" `((query . ,query) (documents . ,(vconcat documents)) (model . ,model)))))
    (list (alist-get 'model answer)
          (alist-get 'scorer answer)
          (mapcar (lambda (r) (alist-get 'index r)) (alist-get 'results answer)))))

(defun smls-demo ()
  "Embed three sentences and print how similar they are."
  (let* ((texts '("The cat sits on the mat." "A cat is sitting on a rug." "Stock markets fell sharply."))
         (vectors (smls-embed texts t))
         (dot (lambda (a b) (let ((s 0.0)) (dotimes (i (length a) s) (setq s (+ s (* (aref a i) (aref b i)))))))))
    (princ (format "vectors: %d, dimension: %d\n" (length vectors) (length (aref vectors 0))))
    (princ (format "cosine(cat, cat): %.3f\n" (funcall dot (aref vectors 0) (aref vectors 1))))
    (princ (format "cosine(cat, markets): %.3f\n" (funcall dot (aref vectors 0) (aref vectors 2)))))
  ;; Several models: list them, embed with the last embedding model listed, then rerank
  ;; by default (a cross-encoder if one is served) and by the default embedding model.
  (let* ((models (smls-models))
         (embedders (seq-filter (lambda (m) (equal (cdr m) "embedding")) models))
         (name (car (car (last embedders))))
         (documents '("Stock markets fell sharply." "Cats sleep up to sixteen hours a day." "Paris is the capital of France.")))
    (princ (format "models: %s\n" (mapconcat (lambda (m) (format "%s (%s)" (car m) (cdr m))) models ", ")))
    (princ (format "model %s: dimension %d\n" name (length (aref (smls-embed '("Hello world!") nil name) 0))))
    (dolist (model (list nil (smls-default-model)))
      (pcase-let ((`(,by ,scorer ,order) (smls-rerank "How long do cats sleep?" documents model)))
        (princ (format "rerank (%s, %s): %s\n" by scorer (mapconcat #'number-to-string order " ")))))))

(provide 'smls)
;;; smls.el ends here
